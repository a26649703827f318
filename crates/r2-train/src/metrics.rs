//! Deferral curves and their summary numbers: r2's envelope metrics. (The paper's AUDC and QNC,
//! on the points themselves with one global cost normalisation, are in [`crate::paper`].)
//!
//! A router swept over λ gives one point per λ: (mean cost per query in USD, mean true quality).
//!
//! - **Deferral curve**: the non-decreasing upper concave envelope of the points. From the cheapest
//!   point (the best quality among equally cheap ones) it follows the upper concave hull of the
//!   points up to the first point of highest quality, then stays flat at that quality up to the
//!   most expensive point's cost. Every point on it is achievable: a point between two routed
//!   points is the expected cost and quality of routing each query with one λ or the other at
//!   random, and spending more never has to lower quality (as in RouterBench and CARROT).
//! - **AUDC** (area under the deferral curve): the integral of the curve over the cost range of the
//!   points, `[min cost, max cost]`, divided by the length of that range, so it is the curve's mean
//!   quality over its own cost range (a quality in [0, 1]). A curve of a single point (a single
//!   model, or a router whose every λ makes the same choices) has AUDC = its quality.
//! - **QNC** (query-normalised cost): the least cost at which the curve reaches the quality of the
//!   best single model (the one with the highest mean quality when every query goes to it without
//!   a budget), divided by that model's mean cost. Below 1: the router matches the best model for
//!   less. `None` ("not reached") when the curve's peak stays below that quality.
//! - **Peak quality**: the highest quality of the curve (= of the points).

use serde::Serialize;

/// One routed λ: mean cost (USD per query) and mean true quality.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    /// The λ this point was routed with (`None` for a single model).
    pub lambda: Option<f64>,
    pub cost: f64,
    pub quality: f64,
}

/// Quality differences below this count as equal when matching a target quality.
const QUALITY_EPS: f64 = 1e-12;

/// The deferral curve of `points` as its vertices `(cost, quality)`, costs strictly ascending.
/// Empty for no points.
pub fn deferral_curve(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut p: Vec<(f64, f64)> = points.to_vec();
    p.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.total_cmp(&a.1)));
    let Some(&(max_cost, _)) = p.last() else {
        return Vec::new();
    };
    let mut hull: Vec<(f64, f64)> = Vec::with_capacity(p.len());
    for &pt in &p {
        if hull.last().is_some_and(|last| last.0 == pt.0) {
            // Same cost, lower (or equal) quality: under the point already kept.
            continue;
        }
        while hull.len() >= 2 {
            let (a, b) = (hull[hull.len() - 2], hull[hull.len() - 1]);
            // Drop b unless a → b → pt turns clockwise (b strictly above the chord a–pt).
            let cross = (b.0 - a.0) * (pt.1 - b.1) - (b.1 - a.1) * (pt.0 - b.0);
            if cross >= 0.0 {
                hull.pop();
            } else {
                break;
            }
        }
        hull.push(pt);
    }
    // The concave hull rises to its highest vertex, then falls: keep the rise, then go flat.
    let peak = hull
        .iter()
        .enumerate()
        .fold(0, |best, (i, v)| if v.1 > hull[best].1 { i } else { best });
    hull.truncate(peak + 1);
    let last = hull[peak];
    if max_cost > last.0 {
        hull.push((max_cost, last.1));
    }
    hull
}

/// Area under the curve over its cost range divided by that range (its mean quality); the quality
/// itself for a one-point curve. `NaN` for an empty curve.
pub fn audc(curve: &[(f64, f64)]) -> f64 {
    match curve {
        [] => f64::NAN,
        [only] => only.1,
        [first, .., last] => {
            let area: f64 = curve
                .windows(2)
                .map(|w| (w[1].0 - w[0].0) * (w[0].1 + w[1].1) / 2.0)
                .sum();
            area / (last.0 - first.0)
        }
    }
}

/// The least cost at which the curve reaches `quality` (linear along its segments), or `None`.
pub fn cost_to_reach(curve: &[(f64, f64)], quality: f64) -> Option<f64> {
    let first = curve.first()?;
    if first.1 >= quality - QUALITY_EPS {
        return Some(first.0);
    }
    for w in curve.windows(2) {
        let ((c0, q0), (c1, q1)) = (w[0], w[1]);
        if q1 >= quality - QUALITY_EPS {
            if q1 <= q0 {
                return Some(c1);
            }
            let t = ((quality - q0) / (q1 - q0)).clamp(0.0, 1.0);
            return Some(c0 + t * (c1 - c0));
        }
    }
    None
}

/// QNC: [`cost_to_reach`] the best single model's quality, over that model's cost.
pub fn qnc(curve: &[(f64, f64)], best_quality: f64, best_cost: f64) -> Option<f64> {
    let cost = cost_to_reach(curve, best_quality)?;
    if best_cost > 0.0 {
        Some(cost / best_cost)
    } else {
        None
    }
}

/// The highest quality of the curve.
pub fn peak_quality(curve: &[(f64, f64)]) -> f64 {
    curve.iter().map(|p| p.1).fold(f64::NAN, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_is_concave_non_decreasing_and_flat_after_the_peak() {
        // (cost, quality): (2, 0.25) is under the hull, (3, 0.1) under (3, 0.6), (8, 0.7) past the peak.
        let pts = [
            (1.0, 0.25),
            (2.0, 0.25),
            (3.0, 0.6),
            (3.0, 0.1),
            (5.0, 0.8),
            (8.0, 0.7),
            (0.5, 0.1),
        ];
        let curve = deferral_curve(&pts);
        assert_eq!(
            curve,
            vec![(0.5, 0.1), (1.0, 0.25), (3.0, 0.6), (5.0, 0.8), (8.0, 0.8)]
        );
        // Area: 0.5·0.175 + 2·0.425 + 2·0.7 + 3·0.8 = 4.7375 over 7.5.
        assert!((audc(&curve) - 4.7375 / 7.5).abs() < 1e-15);
        assert_eq!(peak_quality(&curve), 0.8);
        // 0.7 is reached half way along (3, 0.6)–(5, 0.8).
        assert!((cost_to_reach(&curve, 0.7).unwrap() - 4.0).abs() < 1e-12);
        assert_eq!(cost_to_reach(&curve, 0.05), Some(0.5));
        assert_eq!(cost_to_reach(&curve, 0.81), None);
        assert!((qnc(&curve, 0.7, 8.0).unwrap() - 0.5).abs() < 1e-12);
    }

    #[test]
    fn single_points_and_collinear_points() {
        let one = deferral_curve(&[(2.0, 0.4)]);
        assert_eq!(one, vec![(2.0, 0.4)]);
        assert_eq!(audc(&one), 0.4);
        assert_eq!(qnc(&one, 0.4, 2.0), Some(1.0));
        // Repeated λ giving the same point.
        assert_eq!(deferral_curve(&[(1.0, 0.5), (1.0, 0.5)]), vec![(1.0, 0.5)]);
        // Collinear middle points are dropped; the area is unchanged.
        let line = deferral_curve(&[(0.0, 0.0), (1.0, 0.5), (2.0, 1.0)]);
        assert_eq!(line, vec![(0.0, 0.0), (2.0, 1.0)]);
        assert!((audc(&line) - 0.5).abs() < 1e-15);
        // The cheapest point is also the best: flat.
        assert_eq!(
            deferral_curve(&[(1.0, 0.9), (4.0, 0.3)]),
            vec![(1.0, 0.9), (4.0, 0.9)]
        );
        assert!(deferral_curve(&[]).is_empty());
    }
}
