"""PyTorch side of tools/bench-embed-vs-torch.sh: load a Qwen3 folder with transformers in float32
and time the forward pass (last-token pooling, as r2's in-process embedder) on the same token
counts as `qwen3_speed run`: one text of 32 tokens and a batch of 8 texts of 64 tokens.

Usage: python bench_embed_torch.py run DIR REPS   (or: once DIR, for whole-process timing)
Prints one JSON object a line, like the Rust example.
"""

import json
import os
import sys
import time


def memory_kib():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmHWM:", "VmRSS:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0])
    return out.get("VmHWM", 0), out.get("VmRSS", 0)


def main():
    mode, folder = sys.argv[1], sys.argv[2]
    reps = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    started = time.perf_counter()
    import torch
    from transformers import AutoModel

    import_s = time.perf_counter() - started
    torch.set_num_threads(int(os.environ.get("TORCH_THREADS", "2")))
    started = time.perf_counter()
    model = AutoModel.from_pretrained(folder, dtype=torch.float32)
    model.eval()
    load_s = time.perf_counter() - started
    hwm, rss = memory_kib()

    def embed(batch, tokens):
        ids = torch.randint(3, 500, (batch, tokens), generator=torch.Generator().manual_seed(0))
        mask = torch.ones_like(ids)
        with torch.inference_mode():
            out = model(input_ids=ids, attention_mask=mask).last_hidden_state[:, -1]
            return torch.nn.functional.normalize(out, dim=-1)

    if mode == "once":
        t = time.perf_counter()
        v = embed(1, 28)
        hwm, rss = memory_kib()
        print(json.dumps({"what": "once", "load_seconds": round(load_s, 4),
                          "embed_seconds": round(time.perf_counter() - t, 4),
                          "dim": v.shape[-1], "hwm_kib": hwm, "rss_kib": rss}))
        return
    print(json.dumps({"what": "load", "seconds": round(load_s, 4),
                      "import_seconds": round(import_s, 4), "hwm_kib": hwm, "rss_kib": rss}))
    for name, batch, tokens in (("1x32", 1, 32), ("8x64", 8, 64)):
        embed(batch, tokens)
        times = []
        for _ in range(max(1, reps)):
            t = time.perf_counter()
            embed(batch, tokens)
            times.append(time.perf_counter() - t)
        times.sort()
        median = times[len(times) // 2]
        print(json.dumps({"what": name, "median_seconds": round(median, 4),
                          "tokens_per_second": round(batch * tokens / median, 1),
                          "min_seconds": round(times[0], 4), "max_seconds": round(times[-1], 4)}))
    hwm, rss = memory_kib()
    print(json.dumps({"what": "end", "hwm_kib": hwm, "rss_kib": rss}))


if __name__ == "__main__":
    main()
