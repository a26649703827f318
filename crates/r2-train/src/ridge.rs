//! Closed-form ridge regression with an intercept, exactly as scikit-learn's
//! `Ridge(alpha, fit_intercept=True)` with its Cholesky solver (the solver `auto` picks for dense
//! inputs without sample weights).
//!
//! scikit-learn centres the inputs and the targets, solves `(XcᵀXc + αI)·w = Xcᵀyc` and sets the
//! intercept to `ȳ − x̄·w`. So does [`RidgeSystem`], in float64: the centred Gram matrix `XcᵀXc`
//! is computed and Cholesky-factored once, and every target (head) that shares the same queries
//! reuses the factor. Targets are solved for all at once: one `Xcᵀ·Yc` product, one pair of
//! triangular solves.
//!
//! The two large products (`XcᵀXc`: `n·d²` multiply-adds, `XcᵀYc`: `n·d·h`) run on blocked
//! float64 kernels (`matrixmultiply`), split over a fixed number of row blocks so the result does
//! not depend on how many threads ran them.

use nalgebra::{Cholesky, DMatrix, Dyn};

/// Row blocks of the products; fixed, so the summation order (and the bits of the result) do not
/// depend on the number of threads.
const PARTS: usize = 4;

/// What can go wrong when fitting.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RidgeError {
    /// There are no samples to fit.
    #[error("no training samples")]
    NoSamples,
    /// `alpha` is negative or not finite.
    #[error("alpha must be a finite number ≥ 0, got {0}")]
    InvalidAlpha(f64),
    /// `XcᵀXc + αI` is not positive definite (only possible with α = 0 and collinear inputs).
    #[error(
        "XcᵀXc + αI is not positive definite (alpha {alpha}, {samples} samples, {features} \
         features): raise alpha"
    )]
    NotPositiveDefinite {
        alpha: f64,
        samples: usize,
        features: usize,
    },
    /// A buffer does not have the shape its sizes say.
    #[error("shape: {what} has {got} values, expected {expected}")]
    Shape {
        what: &'static str,
        expected: usize,
        got: usize,
    },
}

impl r2_core::Classify for RidgeError {
    fn class(&self) -> r2_core::ErrorClass {
        match self {
            RidgeError::NoSamples
            | RidgeError::InvalidAlpha(_)
            | RidgeError::NotPositiveDefinite { .. } => r2_core::ErrorClass::InvalidInput,
            RidgeError::Shape { .. } => r2_core::ErrorClass::Internal,
        }
    }
}

/// The fitted heads: `coef` row-major `[heads, features]`, one intercept per head.
#[derive(Debug, Clone, PartialEq)]
pub struct RidgeFit {
    pub features: usize,
    pub coef: Vec<f64>,
    pub intercept: Vec<f64>,
}

impl RidgeFit {
    /// Weights of head `h`.
    pub fn coef_of(&self, h: usize) -> &[f64] {
        &self.coef[h * self.features..(h + 1) * self.features]
    }
}

/// The factored normal equations of one set of samples.
#[derive(Debug)]
pub struct RidgeSystem {
    samples: usize,
    features: usize,
    /// Row-major `[samples, features]`, centred.
    xc: Vec<f64>,
    x_mean: Vec<f64>,
    factor: Cholesky<f64, Dyn>,
    threads: usize,
}

impl RidgeSystem {
    /// Centres `x` (row-major `[samples, features]`, taken over and centred in place), forms
    /// `XcᵀXc + αI` and factors it. `threads` (≥ 1) run the Gram product.
    pub fn new(
        mut x: Vec<f64>,
        samples: usize,
        features: usize,
        alpha: f64,
        threads: usize,
    ) -> Result<Self, RidgeError> {
        if !(alpha.is_finite() && alpha >= 0.0) {
            return Err(RidgeError::InvalidAlpha(alpha));
        }
        if samples == 0 {
            return Err(RidgeError::NoSamples);
        }
        if x.len() != samples * features {
            return Err(RidgeError::Shape {
                what: "inputs",
                expected: samples * features,
                got: x.len(),
            });
        }
        let x_mean = column_means(&x, samples, features);
        for row in x.chunks_exact_mut(features) {
            for (v, m) in row.iter_mut().zip(&x_mean) {
                *v -= m;
            }
        }
        let threads = threads.max(1);
        // Gram = Xcᵀ·Xc: A = Xcᵀ (features × rows), B = Xc (rows × features), C column-major.
        let mut gram = blocked_product(&x, samples, features, threads, |rows, a, c| {
            // SAFETY: the strides describe `a` (rows × features, row-major) read as Xcᵀ and as Xc,
            // and `c` (features × features, column-major), all within their slices.
            unsafe {
                matrixmultiply::dgemm(
                    features,
                    rows,
                    features,
                    1.0,
                    a.as_ptr(),
                    1,
                    features as isize,
                    a.as_ptr(),
                    features as isize,
                    1,
                    0.0,
                    c.as_mut_ptr(),
                    1,
                    features as isize,
                );
            }
        });
        for i in 0..features {
            gram[i * features + i] += alpha;
        }
        let matrix = DMatrix::from_vec(features, features, gram);
        let factor = Cholesky::new(matrix).ok_or(RidgeError::NotPositiveDefinite {
            alpha,
            samples,
            features,
        })?;
        Ok(Self {
            samples,
            features,
            xc: x,
            x_mean,
            factor,
            threads,
        })
    }

    /// Number of samples.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// Number of features.
    pub fn features(&self) -> usize {
        self.features
    }

    /// Fits `heads` targets at once. `targets` is head-major: head `k`'s `samples` values are
    /// `targets[k·samples .. (k + 1)·samples]`.
    pub fn solve(&self, targets: &[f64], heads: usize) -> Result<RidgeFit, RidgeError> {
        let (n, d) = (self.samples, self.features);
        if targets.len() != heads * n {
            return Err(RidgeError::Shape {
                what: "targets",
                expected: heads * n,
                got: targets.len(),
            });
        }
        let mut y_mean = Vec::with_capacity(heads);
        let mut yc = Vec::with_capacity(targets.len());
        for column in targets.chunks_exact(n) {
            let mean = column.iter().sum::<f64>() / n as f64;
            y_mean.push(mean);
            yc.extend(column.iter().map(|v| v - mean));
        }
        // Xcᵀ·Yc: A = Xcᵀ (d × rows), B = Yc block (rows × heads, head-major), C column-major d × heads.
        let xc = &self.xc;
        let rhs = blocked_rows(n, self.threads, d * heads, |start, rows, c| {
            let a = &xc[start * d..(start + rows) * d];
            let b = &yc[start..];
            // SAFETY: `a` is rows × d row-major; `b` starts at row `start` of the head-major
            // targets, so element (r, k) is at r + k·n < yc.len(); `c` is d × heads column-major.
            unsafe {
                matrixmultiply::dgemm(
                    d,
                    rows,
                    heads,
                    1.0,
                    a.as_ptr(),
                    1,
                    d as isize,
                    b.as_ptr(),
                    1,
                    n as isize,
                    0.0,
                    c.as_mut_ptr(),
                    1,
                    d as isize,
                );
            }
        });
        let mut w = DMatrix::from_vec(d, heads, rhs);
        self.factor.solve_mut(&mut w);
        // Column k of the column-major d × heads solution is head k: row-major [heads, d].
        let coef: Vec<f64> = w.as_slice().to_vec();
        let intercept = (0..heads)
            .map(|k| {
                let dot: f64 = coef[k * d..(k + 1) * d]
                    .iter()
                    .zip(&self.x_mean)
                    .map(|(w, m)| w * m)
                    .sum();
                y_mean[k] - dot
            })
            .collect();
        Ok(RidgeFit {
            features: d,
            coef,
            intercept,
        })
    }
}

fn column_means(x: &[f64], samples: usize, features: usize) -> Vec<f64> {
    let mut sum = vec![0.0; features];
    for row in x.chunks_exact(features) {
        for (s, v) in sum.iter_mut().zip(row) {
            *s += v;
        }
    }
    sum.iter().map(|s| s / samples as f64).collect()
}

/// `Σ_blocks f(block)` for a product over the rows of `x`: each of the [`PARTS`] row blocks writes
/// its partial `out_len` result, and the partials are added in block order.
fn blocked_product(
    x: &[f64],
    samples: usize,
    features: usize,
    threads: usize,
    f: impl Fn(usize, &[f64], &mut [f64]) + Sync,
) -> Vec<f64> {
    blocked_rows(samples, threads, features * features, |start, rows, c| {
        f(rows, &x[start * features..(start + rows) * features], c)
    })
}

/// Runs `f(first_row, rows, partial)` for each of the [`PARTS`] row blocks of `samples` rows on up
/// to `threads` threads and sums the partials (each `out_len` long) in block order.
fn blocked_rows(
    samples: usize,
    threads: usize,
    out_len: usize,
    f: impl Fn(usize, usize, &mut [f64]) + Sync,
) -> Vec<f64> {
    let per = samples.div_ceil(PARTS).max(1);
    let blocks: Vec<(usize, usize)> = (0..samples)
        .step_by(per)
        .map(|s| (s, per.min(samples - s)))
        .collect();
    let mut partials: Vec<Vec<f64>> = blocks.iter().map(|_| Vec::new()).collect();
    let threads = threads.clamp(1, blocks.len().max(1));
    let f = &f;
    std::thread::scope(|scope| {
        let mut work: Vec<_> = blocks.iter().zip(partials.iter_mut()).collect();
        let per_thread = work.len().div_ceil(threads).max(1);
        let mut handles = Vec::new();
        while !work.is_empty() {
            let rest = work.split_off(per_thread.min(work.len()));
            let mine = std::mem::replace(&mut work, rest);
            handles.push(scope.spawn(move || {
                for (&(start, rows), out) in mine {
                    *out = vec![0.0; out_len];
                    f(start, rows, out);
                }
            }));
        }
        for h in handles {
            h.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        }
    });
    let mut partials = partials.into_iter();
    let mut total = partials.next().unwrap_or_else(|| vec![0.0; out_len]);
    for p in partials {
        for (t, v) in total.iter_mut().zip(&p) {
            *t += v;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain reference: explicit centring, normal equations by Gaussian elimination.
    #[allow(clippy::needless_range_loop)]
    fn reference(x: &[f64], y: &[f64], n: usize, d: usize, alpha: f64) -> (Vec<f64>, f64) {
        let xm: Vec<f64> = (0..d)
            .map(|j| (0..n).map(|i| x[i * d + j]).sum::<f64>() / n as f64)
            .collect();
        let ym = y.iter().sum::<f64>() / n as f64;
        let mut a = vec![vec![0.0; d + 1]; d];
        for (r, row) in a.iter_mut().enumerate() {
            for c in 0..d {
                row[c] = (0..n)
                    .map(|i| (x[i * d + r] - xm[r]) * (x[i * d + c] - xm[c]))
                    .sum::<f64>()
                    + if r == c { alpha } else { 0.0 };
            }
            row[d] = (0..n).map(|i| (x[i * d + r] - xm[r]) * (y[i] - ym)).sum();
        }
        for p in 0..d {
            for r in p + 1..d {
                let f = a[r][p] / a[p][p];
                for c in p..=d {
                    a[r][c] -= f * a[p][c];
                }
            }
        }
        let mut w = vec![0.0; d];
        for r in (0..d).rev() {
            w[r] = (a[r][d] - (r + 1..d).map(|c| a[r][c] * w[c]).sum::<f64>()) / a[r][r];
        }
        let b = ym - w.iter().zip(&xm).map(|(a, b)| a * b).sum::<f64>();
        (w, b)
    }

    fn data(n: usize, d: usize) -> (Vec<f64>, Vec<f64>) {
        let mut s = 1u64;
        let mut next = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) - 0.5
        };
        let x: Vec<f64> = (0..n * d).map(|_| next() + 0.3).collect();
        let y: Vec<f64> = (0..2 * n).map(|_| next()).collect();
        (x, y)
    }

    #[test]
    fn matches_the_normal_equations_for_every_thread_count() {
        for (n, d) in [(1, 3), (5, 3), (37, 7), (200, 12)] {
            let (x, y) = data(n, d);
            let mut fits = Vec::new();
            for threads in [1, 2, 3, 8] {
                let system = RidgeSystem::new(x.clone(), n, d, 2.5, threads).unwrap();
                fits.push(system.solve(&y, 2).unwrap());
            }
            for fit in &fits[1..] {
                assert_eq!(fit, &fits[0], "thread count changed the bits");
            }
            for k in 0..2 {
                let (w, b) = reference(&x, &y[k * n..(k + 1) * n], n, d, 2.5);
                for (got, want) in fits[0].coef_of(k).iter().zip(&w) {
                    assert!(
                        (got - want).abs() <= 1e-10 * want.abs().max(1e-3),
                        "{got} vs {want}"
                    );
                }
                assert!((fits[0].intercept[k] - b).abs() <= 1e-10);
            }
        }
    }

    #[test]
    fn errors() {
        assert_eq!(
            RidgeSystem::new(vec![], 0, 3, 1.0, 1).unwrap_err(),
            RidgeError::NoSamples
        );
        assert!(matches!(
            RidgeSystem::new(vec![1.0; 6], 2, 3, -1.0, 1),
            Err(RidgeError::InvalidAlpha(_))
        ));
        assert!(matches!(
            RidgeSystem::new(vec![1.0; 6], 2, 3, 0.0, 1),
            Err(RidgeError::NotPositiveDefinite { .. })
        ));
        let s = RidgeSystem::new(vec![1.0, 2.0, 3.0, 5.0], 2, 2, 1.0, 1).unwrap();
        assert!(matches!(s.solve(&[1.0], 1), Err(RidgeError::Shape { .. })));
    }
}
