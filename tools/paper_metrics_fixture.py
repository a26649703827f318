#!/usr/bin/env python3
"""Make the paper-metrics parity fixture of `r2 eval` (crates/r2-train/test_data/paper_metrics/).

The paper's AUDC, QNC and peak are those of upstream's evaluation code, UCF-ML-Research/R2-Router
`main/evaluation/compare_methods.py` at commit 81e976c (the last version before the file was
removed in aa6e535). `calculate_audc`, `calculate_qnc`, `calculate_oracle_unlimited`,
`calculate_oracle_all_limits`, `parse_lambda_distribution` and `route_scores`
(`main/r2/predictor_sklearn.py`) are transcribed below as they are there, with one change: the sort
by cost is `np.argsort(..., kind="stable")` (numpy's default sort is not guaranteed stable; it
matters only for equal costs of different quality, and r2 keeps such points in λ order). How
`main()` calls them is kept too: the global cost range over every router curve, the best single
LLM (strict `>` from 0.0 over the unlimited mean scores) and the target `best × rate`.

Cases (all deterministic, numpy PCG64 with fixed seeds):

- "routed": true labels of 60 queries × 4 models × budgets 10, 50, 200 + unlimited, cost =
  tokens × size as upstream; upstream's default λ distribution (0,0.2,20;0.2,1.0,50); the curves of
  `route_scores` on noisy predictions (an "R2" and an "R2, other noise" router), of a point-based
  router (`route_scores` over the unlimited column only) and of both oracles. Checked twice, with
  QNC target 1.0 and 0.95. The labels are in the fixture too, so the Rust test also checks r2's
  oracle curves (unlimited only, all budgets) against `calculate_oracle_*` point for point.
- "ties": curves with repeated costs (equal and unequal qualities) in λ order.
- "unreached": a target no curve reaches (QNC 1.0).
- "one_cost": every point at one cost (empty global range: AUDC 0, QNC 0).

The Rust test `crates/r2-train/tests/paper_metrics.rs` checks r2's `paper::audc`, `paper::qnc`,
`paper::peak` and `paper::paper_metrics` against the expected numbers to 1e-12.

Environment:

    python3 -m venv /tmp/pm-venv && /tmp/pm-venv/bin/pip install numpy
    /tmp/pm-venv/bin/python tools/paper_metrics_fixture.py

Rerunning it rewrites the same file (numpy 2.x; `np.trapezoid`).
"""

import json
import pathlib

import numpy as np

OUT = pathlib.Path(__file__).resolve().parent.parent / "crates/r2-train/test_data/paper_metrics"
SOURCE = "UCF-ML-Research/R2-Router@81e976cedd74e5b858d5304ce329ff2293d59673 main/evaluation/compare_methods.py"


# ---- transcribed from compare_methods.py (81e976c); only kind="stable" added ----------------


def parse_lambda_distribution(lambda_dist_str):
    segments = []
    for segment in lambda_dist_str.split(';'):
        parts = segment.split(',')
        min_val, max_val, num_points = float(parts[0]), float(parts[1]), int(parts[2])
        segments.append(np.linspace(min_val, max_val, num_points))
    return np.unique(np.concatenate(segments))


def calculate_audc(cost_curve, perf_curve, normalize=True, global_cost_range=None):
    sorted_indices = np.argsort(cost_curve, kind="stable")
    sorted_cost = cost_curve[sorted_indices]
    sorted_perf = perf_curve[sorted_indices]

    if normalize:
        if global_cost_range is not None:
            min_cost, max_cost = global_cost_range
        else:
            min_cost, max_cost = sorted_cost.min(), sorted_cost.max()

        if max_cost > min_cost:
            x_values = (sorted_cost - min_cost) / (max_cost - min_cost)
        else:
            x_values = np.zeros_like(sorted_cost)
    else:
        x_values = sorted_cost

    return np.trapezoid(sorted_perf, x_values)


def calculate_qnc(cost_curve, perf_curve, normalize=True, target_perf=None, global_cost_range=None,
                  target_accuracy_rate=None):
    if target_perf is None:
        peak_perf = np.max(perf_curve)
        target_perf = 0.9 * peak_perf
    elif target_accuracy_rate is not None:
        target_perf = target_perf * target_accuracy_rate

    sorted_indices = np.argsort(cost_curve, kind="stable")
    sorted_cost = cost_curve[sorted_indices]
    sorted_perf = perf_curve[sorted_indices]

    idx = np.where(sorted_perf >= target_perf)[0]
    if len(idx) == 0:
        if normalize:
            return 1.0
        else:
            return sorted_cost[-1]

    cost_at_target = sorted_cost[idx[0]]

    if normalize:
        if global_cost_range is not None:
            min_cost, max_cost = global_cost_range
        else:
            min_cost, max_cost = sorted_cost.min(), sorted_cost.max()

        if max_cost > min_cost:
            normalized_cost = (cost_at_target - min_cost) / (max_cost - min_cost)
        else:
            normalized_cost = 0.0
        return normalized_cost
    else:
        return cost_at_target


def calculate_oracle_unlimited(llms, lamb_range):
    llm_names = list(llms.keys())
    sizes_vec = np.array([llms[name]["size"] for name in llm_names])[None, :]
    Y_score_true = np.stack([llms[name]["true_test_unlimited_score"] for name in llm_names], axis=1)
    Y_count_true = np.stack([llms[name]["true_test_unlimited_count"] for name in llm_names], axis=1)
    true_cost_mat = Y_count_true * sizes_vec
    oracle_cost, oracle_perf = [], []
    n_queries = Y_score_true.shape[0]
    for lam in lamb_range:
        oracle_risk = (1 - lam) * Y_score_true - lam * true_cost_mat
        chosen = oracle_risk.argmax(axis=1)
        oracle_perf.append(Y_score_true[np.arange(n_queries), chosen].mean())
        oracle_cost.append(true_cost_mat[np.arange(n_queries), chosen].mean())
    return np.array(oracle_cost), np.array(oracle_perf)


def calculate_oracle_all_limits(llms, lamb_range):
    llm_names = list(llms.keys())
    scores_blocks, costs_blocks = [], []
    for name in llm_names:
        s_limited = llms[name]["true_test_score"]
        c_limited = llms[name]["true_test_count"] * llms[name]["size"]
        s_unlim = llms[name]["true_test_unlimited_score"][:, None]
        c_unlim = (llms[name]["true_test_unlimited_count"] * llms[name]["size"])[:, None]
        scores_blocks.append(np.concatenate([s_limited, s_unlim], axis=1))
        costs_blocks.append(np.concatenate([c_limited, c_unlim], axis=1))
    Y_score_all = np.concatenate(scores_blocks, axis=1)
    Y_cost_all = np.concatenate(costs_blocks, axis=1)
    oracle_cost, oracle_perf = [], []
    n_queries = Y_score_all.shape[0]
    for lam in lamb_range:
        oracle_risk = (1 - lam) * Y_score_all - lam * Y_cost_all
        chosen = oracle_risk.argmax(axis=1)
        oracle_perf.append(Y_score_all[np.arange(n_queries), chosen].mean())
        oracle_cost.append(Y_cost_all[np.arange(n_queries), chosen].mean())
    return np.array(oracle_cost), np.array(oracle_perf)


def route_scores(llms, lamb_range):
    """main/r2/predictor_sklearn.py's route_scores."""
    router_cost, router_perf = [], []
    llm_names = list(llms.keys())
    n_queries = llms[llm_names[0]]["pred_test_score"].shape[0]
    for lam in lamb_range:
        chosen_perf, chosen_cost = [], []
        for i in range(n_queries):
            best_score = -float('inf')
            best_cost = float('inf')
            best_perf = 0.0
            for llm_name in llm_names:
                llm_data = llms[llm_name]
                pred_scores = llm_data["pred_test_score"][i]
                pred_tokens = llm_data["pred_test_token"][i]
                costs = pred_tokens * llm_data["size"]
                risks = (1 - lam) * pred_scores - lam * costs
                best_token_idx = risks.argmax()
                if risks[best_token_idx] > best_score:
                    best_score = risks[best_token_idx]
                    true_tokens = llm_data["true_test_count"][i, best_token_idx]
                    best_cost = true_tokens * llm_data["size"]
                    best_perf = llm_data["true_test_score"][i, best_token_idx]
            chosen_perf.append(best_perf)
            chosen_cost.append(best_cost)
        router_perf.append(np.mean(chosen_perf))
        router_cost.append(np.mean(chosen_cost))
    return np.array(router_cost), np.array(router_perf)


# ---- main()'s use of them ---------------------------------------------------------------------


def best_single(single_qualities):
    best = 0.0
    for q in single_qualities:
        if q > best:
            best = q
    return best


def expected(curves, single_qualities, rate):
    """What main() computes for these curves: global range, then AUDC, QNC and peak of each."""
    best = best_single(single_qualities)
    all_costs = np.concatenate([np.asarray(c["cost"]) for c in curves])
    global_cost_range = (all_costs.min(), all_costs.max())
    rows = []
    for c in curves:
        cost, perf = np.asarray(c["cost"], dtype=float), np.asarray(c["quality"], dtype=float)
        rows.append({
            "name": c["name"],
            "audc": float(calculate_audc(cost, perf, normalize=True, global_cost_range=global_cost_range)),
            "qnc": float(calculate_qnc(cost, perf, normalize=True, target_perf=best,
                                       global_cost_range=global_cost_range, target_accuracy_rate=rate)),
            "peak": float(perf.max()),
        })
    return {
        "best_quality": float(best),
        "target_quality": float(best * rate),
        "cost_range": [float(global_cost_range[0]), float(global_cost_range[1])],
        "curves": rows,
    }


def case(name, curves, single_qualities, rate, extra=None):
    c = {
        "name": name,
        "qnc_target": rate,
        "single_qualities": [float(q) for q in single_qualities],
        "curves": [{"name": c["name"], "cost": [float(v) for v in c["cost"]],
                    "quality": [float(v) for v in c["quality"]]} for c in curves],
        "expected": expected(curves, single_qualities, rate),
    }
    if extra:
        c.update(extra)
    return c


def routed_world():
    rng = np.random.default_rng(20260311)
    queries, budgets = 60, [10, 50, 200]
    models = {  # name: (size = cost per output token, skill, saturation, verbosity)
        "big-brief": (0.004, 1.6, 20.0, 900.0),
        "big-slow": (0.005, 1.4, 400.0, 1100.0),
        "mid": (0.001, 0.6, 60.0, 500.0),
        "small": (0.0001, -0.3, 40.0, 250.0),
    }
    difficulty = rng.normal(0.5, 0.8, size=queries)
    llms, labels = {}, {}
    for name, (size, skill, tau, verbosity) in models.items():
        p = 1 / (1 + np.exp(-1.5 * (skill - difficulty)))
        natural = np.round(verbosity * np.exp(0.3 * rng.normal(size=queries))).clip(1)
        scores, counts = [], []
        for b in budgets:
            score = np.clip(p * (1 - np.exp(-b / tau)) + rng.normal(scale=0.05, size=queries), 0, 1)
            scores.append(np.round(score, 6))
            counts.append(np.round(np.minimum(natural, b) * (0.85 + 0.15 * rng.random(queries))).clip(1))
        scores.append(np.round(np.clip(p + rng.normal(scale=0.05, size=queries), 0, 1), 6))
        counts.append(natural)
        true_score = np.stack(scores, axis=1)
        true_count = np.stack(counts, axis=1)
        llms[name] = {
            "size": size,
            "true_test_score": true_score,
            "true_test_count": true_count,
            "true_test_unlimited_score": true_score[:, -1],
            "true_test_unlimited_count": true_count[:, -1],
        }
        labels[name] = {"scores": true_score.tolist(), "tokens": true_count.tolist()}
    lambdas = parse_lambda_distribution("0,0.2,20;0.2,1.0,50")

    def router(noise, unlimited_only=False):
        routed = {}
        for name, d in llms.items():
            pred_score = np.clip(d["true_test_score"] + rng.normal(scale=noise, size=d["true_test_score"].shape), 0, 1)
            pred_unl_count = d["true_test_unlimited_count"] * np.exp(rng.normal(scale=noise, size=queries))
            pred_token = np.column_stack([np.tile(np.array(budgets, dtype=float), (queries, 1)), pred_unl_count])
            entry = dict(d, pred_test_score=pred_score, pred_test_token=pred_token)
            if unlimited_only:
                entry = dict(entry, pred_test_score=pred_score[:, -1:], pred_test_token=pred_token[:, -1:],
                             true_test_score=d["true_test_score"][:, -1:],
                             true_test_count=d["true_test_count"][:, -1:])
            routed[name] = entry
        return route_scores(routed, lambdas)

    curves = []
    for cname, (cost, perf) in [
        ("R2", router(0.08)),
        ("R2, other noise", router(0.15)),
        ("point-based", router(0.08, unlimited_only=True)),
        ("oracle, unlimited only", calculate_oracle_unlimited(llms, lambdas)),
        ("oracle, all budgets", calculate_oracle_all_limits(llms, lambdas)),
    ]:
        curves.append({"name": cname, "cost": cost, "quality": perf})
    singles = [d["true_test_unlimited_score"].mean() for d in llms.values()]
    world = {
        "lambdas": [float(v) for v in lambdas],
        "budgets": budgets,
        "models": [{"name": n, "size": s[0]} for n, s in models.items()],
        "labels": labels,
        "cost": "output tokens × size (input tokens 0)",
    }
    return curves, singles, world


def main() -> None:
    curves, singles, world = routed_world()
    cases = [
        case("routed", curves, singles, 1.0, {"world": world}),
        case("routed, QNC target 0.95", curves, singles, 0.95),
    ]
    ties = [
        # λ order: costs fall; repeated points at both ends, and two equal costs of unequal quality.
        {"name": "plateaus", "cost": [5.0, 5.0, 5.0, 3.0, 2.0, 2.0, 1.0, 1.0],
         "quality": [0.9, 0.9, 0.9, 0.8, 0.7, 0.5, 0.3, 0.3]},
        {"name": "zig-zag", "cost": [4.0, 6.0, 3.0, 3.0, 0.5],
         "quality": [0.85, 0.8, 0.6, 0.75, 0.2]},
        {"name": "single point", "cost": [2.5], "quality": [0.65]},
    ]
    cases.append(case("ties", ties, [0.5, 0.8, 0.7], 1.0))
    cases.append(case("unreached", ties, [0.95, 0.2], 1.0))
    one_cost = [
        {"name": "flat a", "cost": [2.0, 2.0, 2.0], "quality": [0.4, 0.6, 0.5]},
        {"name": "flat b", "cost": [2.0, 2.0], "quality": [0.7, 0.7]},
    ]
    cases.append(case("one_cost", one_cost, [0.5], 0.95))
    fixture = {
        "source": SOURCE,
        "generator": "tools/paper_metrics_fixture.py",
        "numpy_version": np.__version__,
        "note": "argsort with kind='stable'; every other line of calculate_audc/calculate_qnc as upstream",
        "cases": cases,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "fixture.json").write_text(json.dumps(fixture, indent=1) + "\n")
    print(f"wrote {OUT / 'fixture.json'} with numpy {np.__version__}")


if __name__ == "__main__":
    main()
