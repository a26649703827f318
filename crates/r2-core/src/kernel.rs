//! The one numeric kernel of the exact path: a dot product of float32 weights with a float64 query,
//! accumulated in float64.
//!
//! Upstream computes `X @ coef_.T + intercept_` with a float64 `X` and float32 weights, so numpy
//! upcasts the weights and sums in float64. Each product of a float32 weight with a float32-valued
//! query is exact in float64; only the order of the additions differs from BLAS, which moves the
//! result by a few units in the last place.
//!
//! The function picks an AVX2+FMA build at run time where the CPU has it. Within one process the
//! choice never changes, so the single-query and batch paths always agree to the bit.

mod bf16;
mod screen;
pub(crate) use bf16::Bf16Screen;
#[cfg(test)]
pub(crate) use screen::Isa;
pub(crate) use screen::Packed;

/// What the screen's error bound needs of a query besides its head values.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct QueryNorms {
    /// `‖x‖`.
    pub(crate) norm: f64,
    /// `‖x − xb‖` (rounded up) for the bfloat16 screen's rounded query `xb`; 0 for float32.
    pub(crate) rounding: f64,
}

/// Number of independent float64 accumulators (four AVX2 registers).
const LANES: usize = 16;

/// `Σ w[i]·x[i]` in float64. `w` and `x` must have the same length.
#[inline]
pub(crate) fn dot(w: &[f32], x: &[f64]) -> f64 {
    debug_assert_eq!(w.len(), x.len());
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has just been checked for the two features this build requires.
            return unsafe { dot_avx2_fma(w, x) };
        }
    }
    dot_portable(w, x)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2_fma(w: &[f32], x: &[f64]) -> f64 {
    use std::arch::x86_64::*;
    let n = w.len().min(x.len());
    let full = n / LANES * LANES;
    let mut acc = [_mm256_setzero_pd(); LANES / 4];
    let mut i = 0;
    while i < full {
        for (k, a) in acc.iter_mut().enumerate() {
            // SAFETY: i + 4k + 4 ≤ full ≤ n, the length of both slices.
            let wv = _mm256_cvtps_pd(_mm_loadu_ps(w.as_ptr().add(i + 4 * k)));
            let xv = _mm256_loadu_pd(x.as_ptr().add(i + 4 * k));
            *a = _mm256_fmadd_pd(wv, xv, *a);
        }
        i += LANES;
    }
    let mut lanes = [0.0f64; LANES];
    for (k, a) in acc.iter().enumerate() {
        // SAFETY: `lanes` has room for four doubles at 4k.
        _mm256_storeu_pd(lanes.as_mut_ptr().add(4 * k), *a);
    }
    let mut tail = 0.0f64;
    for (a, b) in w[full..n].iter().zip(&x[full..n]) {
        tail = f64::from(*a).mul_add(*b, tail);
    }
    reduce(lanes) + tail
}

fn dot_portable(w: &[f32], x: &[f64]) -> f64 {
    let mut acc = [0.0f64; LANES];
    let (wc, xc) = (w.chunks_exact(LANES), x.chunks_exact(LANES));
    let (w_tail, x_tail) = (wc.remainder(), xc.remainder());
    for (a, b) in wc.zip(xc) {
        for i in 0..LANES {
            acc[i] += f64::from(a[i]) * b[i];
        }
    }
    let mut tail = 0.0f64;
    for (a, b) in w_tail.iter().zip(x_tail) {
        tail += f64::from(*a) * *b;
    }
    reduce(acc) + tail
}

/// The Euclidean norm of `x`, with independent accumulators so the sum is not one long chain of
/// dependent additions (the screen needs it once per query).
#[inline]
pub(crate) fn norm(x: &[f64]) -> f64 {
    let mut acc = [0.0f64; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f64 = chunks.remainder().iter().map(|v| v * v).sum();
    for c in chunks {
        for i in 0..LANES {
            acc[i] += c[i] * c[i];
        }
    }
    (reduce(acc) + tail).sqrt()
}

/// Pairwise sum of the accumulators, in a fixed order.
#[inline(always)]
fn reduce(mut acc: [f64; LANES]) -> f64 {
    let mut width = LANES / 2;
    while width > 0 {
        for i in 0..width {
            acc[i] += acc[i + width];
        }
        width /= 2;
    }
    acc[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_a_plain_sum_for_every_tail_length() {
        for len in 0..70 {
            let w: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
            let x: Vec<f64> = (0..len).map(|i| (i as f64 * 0.11).cos()).collect();
            let plain: f64 = w.iter().zip(&x).map(|(a, b)| f64::from(*a) * b).sum();
            let got = dot(&w, &x);
            assert!((got - plain).abs() <= 1e-12, "len {len}: {got} vs {plain}");
            let portable = dot_portable(&w, &x);
            assert!(
                (portable - plain).abs() <= 1e-12,
                "len {len}: {portable} vs {plain}"
            );
        }
    }
}
