//! The paper's metrics, computed exactly as upstream's evaluation code computes them.
//!
//! Source: UCF-ML-Research/R2-Router, `main/evaluation/compare_methods.py` (commit `81e976c`, the
//! last before the file was removed in `aa6e535`; its `calculate_audc`, `calculate_qnc` and the
//! code of `main()` that calls them). Unlike [`crate::metrics`], these work on the routed λ-points
//! themselves (no envelope) and normalise cost by **one global range** shared by every router
//! reported:
//!
//! - **global cost range** `[G_min, G_max]`: the least and the greatest mean cost of every point of
//!   every router curve reported (compare_methods.py: R2-Router, CARROT-KNN, CARROT-Linear, the
//!   unlimited-only oracle, the all-limits oracle; r2: the R2 router, the interpolated R2 router,
//!   the point-based router and both oracles). Single models are not in it.
//! - **normalised cost** of a cost `c`: `(c − G_min) / (G_max − G_min)`, or `0` for every point
//!   when `G_max ≤ G_min`.
//! - **AUDC** (`calculate_audc(cost, perf, normalize=True, global_cost_range=…)`): the points
//!   sorted by cost (`np.argsort`), then `np.trapezoid(perf, normalised cost)`: the trapezoid sum
//!   `Σ (x₁ − x₀)·(y₀ + y₁)/2` over consecutive sorted points, over the curve's own normalised cost
//!   range only (nothing is added before its cheapest or after its dearest point) and *not* divided
//!   by that range. Points of equal cost contribute a segment of width 0; they stay in their input
//!   order (λ ascending; r2 sorts stably, as `np.argsort(kind="stable")` — numpy's default sort is
//!   not guaranteed stable, which matters only for equal costs with different qualities).
//!   A curve of one point has AUDC 0.
//! - **QNC** (`calculate_qnc(cost, perf, normalize=True, target_perf=best, global_cost_range=…,
//!   target_accuracy_rate=rate)`): the target is `best × rate`, where `best` is the highest mean
//!   unlimited quality of a single model; the points sorted by cost, the first whose quality is
//!   `≥` the target (exact comparison), and its normalised cost; `1.0` when no point reaches the
//!   target (and `0.0` when `G_max ≤ G_min`).
//! - **Peak**: `perf.max()`, the highest quality of the points.

use serde::Serialize;

/// Where the formulas come from.
pub const SOURCE: &str =
    "UCF-ML-Research/R2-Router@81e976c main/evaluation/compare_methods.py (calculate_audc, \
     calculate_qnc, global_cost_range)";

/// The paper's three numbers of one router curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PaperNumbers {
    pub audc: f64,
    pub qnc: f64,
    pub peak: f64,
}

/// The least and the greatest cost of all points of all `curves` (`(+∞, −∞)` for no point), as
/// compare_methods.py's `np.concatenate([...]).min(), .max()`.
pub fn cost_range<'a, I>(curves: I) -> (f64, f64)
where
    I: IntoIterator<Item = &'a [(f64, f64)]>,
{
    let mut range = (f64::INFINITY, f64::NEG_INFINITY);
    for curve in curves {
        for &(cost, _) in curve {
            range.0 = range.0.min(cost);
            range.1 = range.1.max(cost);
        }
    }
    range
}

/// The points sorted by cost; equal costs keep their order.
fn by_cost(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut sorted = points.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    sorted
}

/// `cost` normalised by `range` (0 when the range is empty).
pub fn normalised_cost(cost: f64, (min, max): (f64, f64)) -> f64 {
    if max > min {
        (cost - min) / (max - min)
    } else {
        0.0
    }
}

/// The paper's AUDC of `points` `(cost, quality)` over the global cost `range`.
pub fn audc(points: &[(f64, f64)], range: (f64, f64)) -> f64 {
    let sorted = by_cost(points);
    let x: Vec<f64> = sorted
        .iter()
        .map(|&(c, _)| normalised_cost(c, range))
        .collect();
    let mut area = 0.0;
    for i in 1..sorted.len() {
        area += (x[i] - x[i - 1]) * (sorted[i].1 + sorted[i - 1].1) / 2.0;
    }
    area
}

/// The paper's QNC of `points`: the normalised cost of the cheapest point whose quality reaches
/// `target_quality` (= best single model's quality × rate), 1.0 when none does.
pub fn qnc(points: &[(f64, f64)], target_quality: f64, range: (f64, f64)) -> f64 {
    match by_cost(points).iter().find(|p| p.1 >= target_quality) {
        Some(&(cost, _)) => normalised_cost(cost, range),
        None => 1.0,
    }
}

/// The highest quality of `points` (`NaN` for none).
pub fn peak(points: &[(f64, f64)]) -> f64 {
    points.iter().map(|p| p.1).fold(f64::NAN, f64::max)
}

/// AUDC, QNC and peak of every curve, over the global cost range of all of them; also returns
/// that range. `target_quality` is the best single model's quality times the QNC target rate.
pub fn paper_metrics(
    curves: &[&[(f64, f64)]],
    target_quality: f64,
) -> ((f64, f64), Vec<PaperNumbers>) {
    let range = cost_range(curves.iter().copied());
    let numbers = curves
        .iter()
        .map(|points| PaperNumbers {
            audc: audc(points, range),
            qnc: qnc(points, target_quality, range),
            peak: peak(points),
        })
        .collect();
    (range, numbers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trapezoid_over_the_global_range_undivided() {
        // λ order: costs fall as λ grows.
        let points = [(4.0, 0.8), (2.0, 0.6), (2.0, 0.6), (1.0, 0.2)];
        let range = (0.0, 8.0);
        // Sorted: (1, .2) (2, .6) (2, .6) (4, .8); x = 1/8, 2/8, 2/8, 4/8.
        let want = 0.125 * 0.4 + 0.0 + 0.25 * 0.7;
        assert!((audc(&points, range) - want).abs() < 1e-15);
        assert_eq!(qnc(&points, 0.6, range), 0.25);
        assert_eq!(qnc(&points, 0.81, range), 1.0);
        assert_eq!(peak(&points), 0.8);
        assert_eq!(audc(&[(3.0, 0.5)], range), 0.0);
        // An empty range normalises every cost to 0.
        assert_eq!(audc(&points, (1.0, 1.0)), 0.0);
        assert_eq!(qnc(&points, 0.5, (1.0, 1.0)), 0.0);
        let (range, numbers) = paper_metrics(&[&points, &[(0.5, 0.1), (8.0, 0.9)]], 0.85);
        assert_eq!(range, (0.5, 8.0));
        assert_eq!(numbers[0].qnc, 1.0);
        // Reached, at the dearest point of the range.
        assert_eq!(numbers[1].qnc, 1.0);
        assert_eq!(qnc(&[(0.5, 0.1), (2.0, 0.9)], 0.85, range), 0.2);
        assert!((numbers[1].audc - 0.5).abs() < 1e-15);
    }
}
