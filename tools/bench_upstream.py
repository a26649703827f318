#!/usr/bin/env python3
"""Times upstream R2-Router's routing loop (scikit-learn Ridge.predict per head, as in upstream's
R2Router.route) on the golden embeddings, for the speed ratio in README.md.

Needs numpy, scikit-learn==1.7.2 and joblib (e.g. in a venv):
    python3 -m venv /tmp/r2-py && /tmp/r2-py/bin/pip install numpy scikit-learn==1.7.2 joblib
    /tmp/r2-py/bin/python tools/bench_upstream.py ../shared
"""
import json
import os
import statistics
import sys
import time

import joblib
import numpy as np

shared = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..", "shared")
root = os.path.join(shared, "upstream-r2-router")
config = json.load(open(os.path.join(root, "config.json")))
predictors = {}
t0 = time.perf_counter()
for name, cfg in config["models"].items():
    d = os.path.join(root, "checkpoints", cfg["checkpoint_dir"])
    predictors[name] = {
        "limited": joblib.load(os.path.join(d, "limited_score_predictors.joblib")),
        "unlimited_score": joblib.load(os.path.join(d, "unlimited_score_predictor.joblib")),
        "unlimited_token": joblib.load(os.path.join(d, "unlimited_token_predictor.joblib")),
    }
load_ms = (time.perf_counter() - t0) * 1e3


def route(embedding, lam, input_tokens):
    embedding = embedding.reshape(1, -1)
    options = []
    for name, pred in predictors.items():
        cfg = config["models"][name]
        input_cost = input_tokens * cfg["input_price_per_million"] / 1e6
        for key, ridge in pred["limited"].items():
            budget = int(key.replace("_score", ""))
            q = float(np.clip(ridge.predict(embedding)[0], 0, 1))
            cost = input_cost + budget * cfg["output_price_per_million"] / 1e6
            options.append((name, budget, round(q, 4), round(cost, 8), round((1 - lam) * q - lam * cost, 8)))
        q = float(np.clip(pred["unlimited_score"].predict(embedding)[0], 0, 1))
        t = float(max(0, pred["unlimited_token"].predict(embedding)[0]))
        cost = input_cost + t * cfg["output_price_per_million"] / 1e6
        options.append((name, "unlimited", round(q, 4), round(cost, 8), round((1 - lam) * q - lam * cost, 8)))
    return max(options, key=lambda o: o[4])


inputs = [json.loads(line) for line in open(os.path.join(shared, "golden", "route-input.jsonl"))]
embeddings = [np.array(i["embedding"]) for i in inputs]
times = []
for rep in range(5):
    for e, i in zip(embeddings, inputs):
        t = time.perf_counter()
        route(e, 0.99999, i["input_tokens"])
        times.append(time.perf_counter() - t)
print(f"load 33 joblib files: {load_ms:.1f} ms")
print(f"route one embedding: median {statistics.median(times) * 1e3:.3f} ms over {len(times)} calls")
