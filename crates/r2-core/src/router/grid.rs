//! Continuous budgets (R2-Router §4.3.3): extra limited budgets between the trained anchors, their
//! predicted quality interpolated linearly between the two neighbouring anchors' heads.
//!
//! This is an extension of the exact path only; [`Router::route`] and the batch paths are not
//! touched. With `k = 0` the grid holds exactly the anchors, and [`Router::route_interpolated`]
//! returns the decision of [`Router::route`] (same options, same arithmetic, same tie order).

use super::{Checked, Router};
use crate::{Budget, Decision, Error, Result, RouteOption, RouteParams};

/// One limited budget of a [`BudgetGrid`]: either a trained anchor or a budget between two.
///
/// Its quality head value is `h[lower] + weight·(h[upper] − h[lower])`, where `h[i]` is the value of
/// the quality head of anchor budget `i`. For an anchor, `lower == upper` and `weight == 0`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetPoint {
    /// The budget in tokens.
    pub tokens: u32,
    /// Index (into [`Router::budgets`]) of the anchor at or below `tokens`.
    pub lower: usize,
    /// Index of the anchor at or above `tokens`.
    pub upper: usize,
    /// `(tokens − budgets[lower]) / (budgets[upper] − budgets[lower])`, in `[0, 1)`.
    pub weight: f64,
}

impl BudgetPoint {
    /// Whether this is a trained anchor budget.
    pub fn is_anchor(&self) -> bool {
        self.lower == self.upper
    }

    /// Linear interpolation of per-anchor values (head outputs, or true labels) at this budget:
    /// `values[lower] + weight·(values[upper] − values[lower])`; for an anchor, `values[lower]`.
    #[inline]
    pub fn interpolate(&self, values: &[f64]) -> f64 {
        if self.is_anchor() {
            values[self.lower]
        } else {
            let (a, b) = (values[self.lower], values[self.upper]);
            a + self.weight * (b - a)
        }
    }
}

/// The limited budgets a router chooses between when budgets are interpolated: the anchors, and
/// between each pair of adjacent anchors `a < b`, `k` budgets at `a + round(j·(b − a)/(k + 1))`,
/// `j = 1..=k` (rounded half up to whole tokens; a budget that rounds onto a neighbour is dropped).
/// Ascending. Made by [`Router::budget_grid`].
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetGrid {
    points: Vec<BudgetPoint>,
    anchors: usize,
    k: u32,
}

impl BudgetGrid {
    /// The budgets, ascending, anchors included.
    pub fn points(&self) -> &[BudgetPoint] {
        &self.points
    }

    /// The number of extra budgets asked for between each pair of anchors.
    pub fn k(&self) -> u32 {
        self.k
    }

    /// The point of budget `tokens`, if the grid has it.
    pub fn point(&self, tokens: u32) -> Option<&BudgetPoint> {
        self.points
            .binary_search_by_key(&tokens, |p| p.tokens)
            .ok()
            .map(|i| &self.points[i])
    }
}

impl Router {
    /// The budget grid with `k` interpolated budgets between each pair of adjacent anchors
    /// (`k = 0`: the anchors only).
    pub fn budget_grid(&self, k: u32) -> BudgetGrid {
        let anchors = &self.budgets;
        let mut points = Vec::new();
        for (i, &a) in anchors.iter().enumerate() {
            points.push(BudgetPoint {
                tokens: a,
                lower: i,
                upper: i,
                weight: 0.0,
            });
            let Some(&b) = anchors.get(i + 1) else {
                break;
            };
            let gap = u128::from(b - a);
            let parts = u128::from(k) + 1;
            let mut push = |tokens: u32| {
                points.push(BudgetPoint {
                    tokens,
                    lower: i,
                    upper: i + 1,
                    weight: f64::from(tokens - a) / f64::from(b - a),
                })
            };
            if parts >= gap {
                // Steps of at most one token: every whole budget strictly between the anchors.
                (a + 1..b).for_each(&mut push);
                continue;
            }
            let mut last = a;
            for j in 1..parts {
                // a + round(j·gap / parts), half up, in integers.
                let tokens = a + ((2 * j * gap + parts) / (2 * parts)) as u32;
                if tokens > last && tokens < b {
                    push(tokens);
                    last = tokens;
                }
            }
        }
        BudgetGrid {
            points,
            anchors: anchors.len(),
            k,
        }
    }

    /// Routes one embedding over the interpolated budget grid of [`Router::budget_grid`]`(k)`: the
    /// exact path (every head in float64) with the extra options. With `k = 0` this is
    /// [`Router::route`]'s decision.
    pub fn route_interpolated(
        &self,
        embedding: &[f64],
        input_tokens: u64,
        params: &RouteParams,
        k: u32,
    ) -> Result<Decision> {
        let checked = self.checked(params)?;
        self.check_embedding(0, embedding)?;
        let heads = self.exact_heads(embedding);
        self.route_grid(0, &heads, input_tokens, &checked, &self.budget_grid(k))
    }

    /// Routes one query from its head outputs (as [`Router::head_outputs`] returns them) over
    /// `grid` (made by this router's [`Router::budget_grid`]). For callers that route the same
    /// query under many λ: the heads are computed once. With the `k = 0` grid the decision is that
    /// of [`Router::route`] for the embedding the heads came from.
    pub fn route_heads(
        &self,
        heads: &[f64],
        input_tokens: u64,
        params: &RouteParams,
        grid: &BudgetGrid,
    ) -> Result<Decision> {
        let checked = self.checked(params)?;
        if heads.len() != self.head_count() {
            return Err(Error::HeadShape {
                model: "(all models)".into(),
                what: "head outputs",
                expected: self.head_count(),
                got: heads.len(),
            });
        }
        if grid.anchors != self.budgets.len()
            || grid.points.iter().any(|p| p.upper >= self.budgets.len())
        {
            return Err(Error::InvalidBudgets {
                got: grid.points.iter().map(|p| p.tokens).collect(),
            });
        }
        self.route_grid(0, heads, input_tokens, &checked, grid)
    }

    /// The option of model `m` at grid point `p`. Anchors go through [`Router::option`], so their
    /// bits are those of the other paths.
    fn grid_option(
        &self,
        m: usize,
        p: &BudgetPoint,
        h: &[f64],
        input_tokens: u64,
        lambda: f64,
    ) -> RouteOption {
        let b = self.budgets.len();
        if p.is_anchor() {
            return self.option(m, p.lower, h[p.lower], h[b + 1], input_tokens, lambda);
        }
        let model = &self.models[m];
        let input_cost = input_tokens as f64 * model.input_price_per_million / 1e6;
        let quality = p.interpolate(&h[..b]).clamp(0.0, 1.0);
        let output_tokens = f64::from(p.tokens);
        let cost = input_cost + output_tokens * model.output_price_per_million / 1e6;
        RouteOption {
            model: m,
            budget: Budget::Tokens(p.tokens),
            quality,
            output_tokens,
            cost,
            risk: (1.0 - lambda) * quality - lambda * cost,
        }
    }

    /// The exact path over a budget grid; mirrors `route_exact` option for option.
    fn route_grid(
        &self,
        query: usize,
        heads: &[f64],
        input_tokens: u64,
        checked: &Checked,
        grid: &BudgetGrid,
    ) -> Result<Decision> {
        self.check_heads(query, heads, checked)?;
        let per_model = self.budgets.len() + 2;
        let b = self.budgets.len();
        let options = (0..self.models.len())
            .filter(|&m| self.is_candidate(checked, m))
            .flat_map(|m| {
                let h = &heads[m * per_model..(m + 1) * per_model];
                let limited = grid
                    .points
                    .iter()
                    .map(move |p| self.grid_option(m, p, h, input_tokens, checked.lambda));
                let unlimited = self.option(m, b, h[b], h[b + 1], input_tokens, checked.lambda);
                limited.chain(std::iter::once(unlimited))
            });
        self.select(query, options, checked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ModelHeads;

    fn router(budgets: Vec<u32>) -> Router {
        let rows = budgets.len() + 2;
        let model = |name: &str, q: f32| ModelHeads {
            name: name.into(),
            input_price_per_million: 1.0,
            output_price_per_million: 10.0,
            coef: vec![0.0; rows],
            intercept: (0..rows)
                .map(|r| {
                    if r + 1 == rows {
                        500.0
                    } else {
                        q + 0.1 * r as f32
                    }
                })
                .collect(),
        };
        Router::new(1, budgets, vec![model("a", 0.2), model("b", 0.3)]).unwrap()
    }

    #[test]
    fn grid_spacing_rounding_and_dedup() {
        let r = router(vec![10, 20, 100]);
        let tokens =
            |k| -> Vec<u32> { r.budget_grid(k).points().iter().map(|p| p.tokens).collect() };
        assert_eq!(tokens(0), vec![10, 20, 100]);
        assert_eq!(tokens(1), vec![10, 15, 20, 60, 100]);
        assert_eq!(tokens(3), vec![10, 13, 15, 18, 20, 40, 60, 80, 100]);
        // 25 extra budgets between 10 and 20 round onto 9 distinct whole tokens; 9 give the same.
        let dense = tokens(25);
        assert_eq!(&dense[..11], &[10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]);
        assert!(dense.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(&tokens(9)[..11], &dense[..11]);
        assert_eq!(tokens(u32::MAX).len(), 100 - 10 + 1);
        // Fewer steps than tokens: the rounding loop and the dense case agree where they meet.
        assert_eq!(tokens(8)[..10], [10, 11, 12, 13, 14, 16, 17, 18, 19, 20]);
        let p = *r.budget_grid(1).point(60).unwrap();
        assert_eq!((p.lower, p.upper, p.weight), (1, 2, 0.5));
        assert_eq!(p.interpolate(&[0.0, 0.2, 0.6]), 0.4);
    }

    #[test]
    fn k_zero_is_route_and_interpolated_quality_is_linear() {
        let r = router(vec![10, 20, 100]);
        for lambda in [0.0, 0.5, 0.9, 0.999, 1.0] {
            let params = RouteParams::new(lambda).with_ranked(true);
            let plain = r.route(&[0.0], 30, &params).unwrap();
            let interp = r.route_interpolated(&[0.0], 30, &params, 0).unwrap();
            assert_eq!(plain, interp);
        }
        let d = r
            .route_interpolated(&[0.0], 30, &RouteParams::new(0.5).with_ranked(true), 1)
            .unwrap();
        assert_eq!(d.ranked.len(), 2 * 6);
        let at_60 = d
            .ranked
            .iter()
            .find(|o| o.model == 1 && o.budget == Budget::Tokens(60))
            .unwrap();
        // Anchors 20 and 100 of model b predict 0.4 and 0.5 (float32 intercepts).
        let expect =
            f64::from(0.3f32 + 0.1) + 0.5 * (f64::from(0.3f32 + 0.2) - f64::from(0.3f32 + 0.1));
        assert!((at_60.quality - expect).abs() < 1e-15);
        assert_eq!(at_60.output_tokens, 60.0);
    }

    #[test]
    fn route_heads_checks_shapes() {
        let r = router(vec![10, 20]);
        let other = router(vec![10, 20, 30]);
        let heads = r.head_outputs(&[0.0]).unwrap();
        let params = RouteParams::new(0.5);
        assert!(r
            .route_heads(&heads[1..], 1, &params, &r.budget_grid(0))
            .is_err());
        assert!(r
            .route_heads(&heads, 1, &params, &other.budget_grid(0))
            .is_err());
        let d = r
            .route_heads(&heads, 1, &params, &r.budget_grid(0))
            .unwrap();
        assert_eq!(d, r.route(&[0.0], 1, &params).unwrap());
    }
}
