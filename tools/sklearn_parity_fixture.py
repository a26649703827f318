#!/usr/bin/env python3
"""Make the scikit-learn parity fixture of `r2 train` (crates/r2-train/test_data/parity/).

A small synthetic dataset (60 queries: 48 "train" + 12 "test", 3 models, budgets 50, 200 and
"unlimited", 16-d embeddings; even queries carry their embedding inline on their first record, odd
queries have it in embeddings.jsonl) and, for every head r2 trains, the coefficients and intercept
of scikit-learn's `Ridge(alpha=10.0)` (fit_intercept=True, solver "auto") fitted on the 48 train
queries:

  per model: score at budget 50, score at budget 200, unlimited score, unlimited output tokens.

The Rust test `crates/r2-train/tests/sklearn_parity.rs` reads the dataset with r2's loader, fits it
with r2's ridge and checks every coefficient and intercept against sklearn's within 1e-6 relative.

Environment (scikit-learn 1.7.2, as upstream R2-Router used):

    python3 -m venv /tmp/pyenv
    /tmp/pyenv/bin/pip install numpy scikit-learn==1.7.2
    /tmp/pyenv/bin/python tools/sklearn_parity_fixture.py

The output is deterministic (numpy's PCG64 with a fixed seed); rerunning it rewrites the same files.
"""

import json
import pathlib

import numpy as np
import sklearn
from sklearn.linear_model import Ridge

ALPHA = 10.0
QUERIES = 60
TEST = 12
DIM = 16
BUDGETS = [50, 200]
MODELS = {
    # name: (input $/M, output $/M, skill)
    "alpha-large": (1.0, 4.0, 1.2),
    "beta-mid": (0.3, 1.0, 0.6),
    "gamma-small": (0.05, 0.1, 0.0),
}
OUT = pathlib.Path(__file__).resolve().parent.parent / "crates/r2-train/test_data/parity"


def main() -> None:
    rng = np.random.default_rng(20260206)
    x = rng.normal(size=(QUERIES, DIM)) * 0.5 + 0.1
    direction = rng.normal(size=DIM)
    difficulty = x @ direction * 0.3
    is_test = np.zeros(QUERIES, dtype=bool)
    is_test[rng.choice(QUERIES, size=TEST, replace=False)] = True

    labels = {}  # (model, budget) -> (score[QUERIES], tokens[QUERIES])
    for name, (_, _, skill) in MODELS.items():
        p = 1.0 / (1.0 + np.exp(-(skill - difficulty)))
        natural = np.round(300 + 100 * rng.random(QUERIES) + 50 * difficulty).clip(1)
        for budget in BUDGETS + ["unlimited"]:
            if budget == "unlimited":
                score, tokens = p, natural
            else:
                score = p * (1 - np.exp(-budget / 100))
                tokens = np.minimum(natural, budget) * (0.8 + 0.2 * rng.random(QUERIES))
            # Graded scores with noise, rounded to 4 decimals; whole output tokens.
            score = np.round(np.clip(score + rng.normal(scale=0.05, size=QUERIES), 0, 1), 4)
            labels[(name, budget)] = (score, np.round(tokens))

    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / "records.jsonl", "w") as records, open(OUT / "embeddings.jsonl", "w") as emb:
        for q in range(QUERIES):
            qid = f"p{q:02d}"
            first = True
            for name in MODELS:
                for budget in BUDGETS + ["unlimited"]:
                    score, tokens = labels[(name, budget)]
                    record = {
                        "query_id": qid,
                        "model": name,
                        "budget": budget,
                        "score": float(score[q]),
                        "output_tokens": int(tokens[q]),
                        "split": "test" if is_test[q] else "train",
                    }
                    if first and q % 2 == 0:
                        record["embedding"] = [float(v) for v in x[q]]
                    first = False
                    records.write(json.dumps(record, separators=(",", ":")) + "\n")
            if q % 2 == 1:
                emb.write(json.dumps({"query_id": qid, "embedding": [float(v) for v in x[q]]}, separators=(",", ":")) + "\n")

    pool = {
        "embedding_model": "parity-fixture",
        "embedding_dim": DIM,
        "default_lambda": 0.99,
        "models": {
            name: {
                "openrouter_id": f"fixture/{name}",
                "input_price_per_million": inp,
                "output_price_per_million": out,
            }
            for name, (inp, out, _) in MODELS.items()
        },
    }
    (OUT / "pool.json").write_text(json.dumps(pool, indent=2) + "\n")

    train = ~is_test
    heads = {}
    for name in MODELS:
        coef, intercept = [], []
        targets = [labels[(name, b)][0] for b in BUDGETS + ["unlimited"]]
        targets.append(labels[(name, "unlimited")][1])
        for y in targets:
            ridge = Ridge(alpha=ALPHA).fit(x[train], y[train])
            coef.append([float(v) for v in ridge.coef_])
            intercept.append(float(ridge.intercept_))
        heads[name] = {"coef": coef, "intercept": intercept}
    expected = {
        "sklearn_version": sklearn.__version__,
        "alpha": ALPHA,
        "train_queries": int(train.sum()),
        "budgets": BUDGETS,
        "rows": "per model: score at each budget (ascending), unlimited score, unlimited output tokens",
        "models": heads,
    }
    (OUT / "sklearn.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(f"wrote {OUT} with scikit-learn {sklearn.__version__}")


if __name__ == "__main__":
    main()
