#!/usr/bin/env bash
# r2's in-process Qwen3 embedder against PyTorch (transformers, float32) on a network of
# Qwen3-0.6B's exact shape with random bfloat16 weights: load time (warm page cache), tokens/s for
# one text of 32 tokens and for 8 texts of 64 tokens, and peak RSS, each as the median of RUNS
# fresh processes, side by side, with the ratios r2 / PyTorch.
#
# Usage: tools/bench-embed-vs-torch.sh [RUNS] [REPS]     (defaults 3 and 5)
# Env:   WORK (default target/bench-embed: the venv and the 1.2 GB model folder),
#        R2_BIN=path of an already built qwen3_speed example (skips the build),
#        THREADS (default 2: RAYON_NUM_THREADS for r2, torch.set_num_threads for PyTorch),
#        SKIP_TORCH=1 to time r2 only, BEFORE_BIN=path of another build of the qwen3_speed
#        example (e.g. of an older commit) to time it too, in the same runs ("before" column).
# Needs: python3 with venv; PyPI reachable for torch and transformers (the CPU-only wheel index
# is tried first, then plain PyPI, whose wheel is larger).
set -euo pipefail

RUNS=${1:-3}
REPS=${2:-5}
THREADS=${THREADS:-2}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-$ROOT/target/bench-embed}
MODEL=$WORK/qwen3-0.6b-random
VENV=$WORK/venv
mkdir -p "$WORK"

if [ -z "${R2_BIN:-}" ]; then
  cargo build --release -q -p r2-embed --features local --example qwen3_speed
fi
BIN=${R2_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/qwen3_speed}
if [ ! -f "$MODEL/model.safetensors" ]; then
  echo "writing the random-weights model to $MODEL" >&2
  "$BIN" write "$MODEL"
fi

if [ "${SKIP_TORCH:-0}" != 1 ] && ! "$VENV/bin/python" -c 'import torch, transformers' 2>/dev/null; then
  echo "installing torch and transformers into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip >&2
  "$VENV/bin/pip" install -q --timeout 20 --index-url https://download.pytorch.org/whl/cpu torch >&2 \
    || "$VENV/bin/pip" install -q torch >&2
  "$VENV/bin/pip" install -q transformers safetensors numpy >&2
fi

export TRANSFORMERS_VERBOSITY=error HF_HUB_DISABLE_PROGRESS_BARS=1 HF_HUB_OFFLINE=1
# Warm the page cache: both sides read the same file.
cat "$MODEL/model.safetensors" > /dev/null

OUT=$WORK/results.jsonl
: > "$OUT"
for run in $(seq "$RUNS"); do
  if [ -n "${BEFORE_BIN:-}" ]; then
    RAYON_NUM_THREADS=$THREADS "$BEFORE_BIN" run "$MODEL" "$REPS" | sed "s/^{/{\"side\":\"before\",\"run\":$run,/" >> "$OUT"
    RAYON_NUM_THREADS=$THREADS "$BEFORE_BIN" once "$MODEL" | sed "s/^{/{\"side\":\"before\",\"run\":$run,/" >> "$OUT"
  fi
  RAYON_NUM_THREADS=$THREADS "$BIN" run "$MODEL" "$REPS" | sed "s/^{/{\"side\":\"r2\",\"run\":$run,/" >> "$OUT"
  RAYON_NUM_THREADS=$THREADS "$BIN" once "$MODEL" | sed "s/^{/{\"side\":\"r2\",\"run\":$run,/" >> "$OUT"
  if [ "${SKIP_TORCH:-0}" != 1 ]; then
    TORCH_THREADS=$THREADS OMP_NUM_THREADS=$THREADS "$VENV/bin/python" "$ROOT/tools/bench_embed_torch.py" run "$MODEL" "$REPS" \
      | sed "s/^{/{\"side\":\"torch\",\"run\":$run,/" >> "$OUT"
    TORCH_THREADS=$THREADS OMP_NUM_THREADS=$THREADS "$VENV/bin/python" "$ROOT/tools/bench_embed_torch.py" once "$MODEL" \
      | sed "s/^{/{\"side\":\"torch\",\"run\":$run,/" >> "$OUT"
  fi
done

python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def med(side, what, key):
    vals = [r[key] for r in rows if r["side"] == side and r["what"] == what and key in r]
    return statistics.median(vals) if vals else None
metrics = [
    ("load (s, in process)", "load", "seconds", False),
    ("one 28-token query: load + embed (s)", "once", None, False),
    ("1 x 32 tokens (tokens/s)", "1x32", "tokens_per_second", True),
    ("8 x 64 tokens (tokens/s)", "8x64", "tokens_per_second", True),
    ("peak RSS after load (MiB)", "load", "hwm_kib", False),
    ("peak RSS at the end (MiB)", "end", "hwm_kib", False),
    ("RSS at the end (MiB)", "end", "rss_kib", False),
]
def value(side, what, key):
    if what == "once":
        a, b = med(side, "once", "load_seconds"), med(side, "once", "embed_seconds")
        return None if a is None else a + b
    v = med(side, what, key)
    return None if v is None else (v / 1024 if key.endswith("kib") else v)
before = any(r["side"] == "before" for r in rows)
print(f"{'':40} {'r2':>10} {'torch':>10} {'r2/torch':>9}" + (f" {'before':>10} {'r2/before':>9}" if before else ""))
for label, what, key, _higher in metrics:
    r, t = value("r2", what, key), value("torch", what, key)
    ratio = f"{r / t:9.2f}" if r is not None and t else f"{'':>9}"
    fmt = lambda v: f"{v:10.3f}" if v is not None and v < 100 else (f"{v:10.0f}" if v is not None else f"{'-':>10}")
    line = f"{label:40} {fmt(r)} {fmt(t)} {ratio}"
    if before:
        b = value("before", what, key)
        line += f" {fmt(b)} " + (f"{r / b:9.2f}" if r is not None and b else f"{'':>9}")
    print(line)
runs = len({r["run"] for r in rows})
print(f"medians of {runs} runs (fresh processes); raw results in {sys.argv[1]}")
PY
